"""device=cuda on a torch build without CUDA fails at once with one line, not minutes later."""
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_with_one_line(capsys):
    from traces.base_model import resolve_device
    with pytest.raises(SystemExit) as exc:
        resolve_device("cuda")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device=cuda") and "\n" not in err
    assert resolve_device("cpu").type == "cpu"
