"""Build prompts.jsonl: the rrtsim prompt set (written for rrtsim).

Provenance: every subject list and template below was written by hand for
rrtsim (no external data set, nothing downloaded). Prompts are the cross of a
few templates per category with hand-written subjects, plus free-form
prompts. The split is fixed by position (see ``split_of``) and stored in the
JSONL, so uptraining and recording never disagree about it.

Run ``python -m traces.prompts.build`` to regenerate (deterministic).
"""
from __future__ import annotations

import json
from pathlib import Path

CONCEPTS = ["photosynthesis", "inflation", "a black hole", "machine learning", "the water cycle",
            "compound interest", "vaccines", "plate tectonics", "supply and demand", "DNA replication",
            "the greenhouse effect", "a blockchain", "electric current", "natural selection",
            "the stock market", "gravity", "an operating system", "the immune system", "recursion",
            "democracy", "a neural network", "the Pythagorean theorem", "nuclear fission", "the internet",
            "climate change", "probability", "a compiler", "the French Revolution", "cloud computing",
            "entropy", "the human heart", "encryption", "tides", "a recession", "quantum computing",
            "the Renaissance", "antibiotics", "a hash table", "volcanoes", "the placebo effect"]
EXPLAIN = ["Explain {} in simple terms.", "Can you explain how {} works to a ten-year-old?",
           "Give a short, clear definition of {} and one example.",
           "What are the most common misconceptions about {}?"]

CODE_TASKS = ["reverses a string", "checks whether a number is prime", "computes the factorial of n",
              "returns the n-th Fibonacci number", "removes duplicates from a list while keeping order",
              "counts the words in a sentence", "checks whether a string is a palindrome",
              "merges two sorted lists", "finds the largest element in a list", "converts Celsius to Fahrenheit",
              "sorts a list of dictionaries by a key", "flattens a nested list", "computes the average of a list of numbers",
              "reads a text file and counts its lines", "finds the most common character in a string",
              "implements binary search", "validates an email address with a regular expression",
              "computes the greatest common divisor of two numbers", "transposes a matrix",
              "groups a list of words by their first letter", "returns all even numbers from a list",
              "capitalizes the first letter of each word", "checks whether two strings are anagrams",
              "converts a binary string to an integer", "rotates a list by k positions",
              "computes the sum of the digits of an integer", "generates all subsets of a list",
              "counts vowels in a string", "implements a simple stack class", "finds the second largest number in a list"]
CODE = ["Write a Python function that {}.", "Write a JavaScript function that {}.",
        "How would you write a function that {}? Show the code and explain it briefly."]

PAIRS = [("a virus", "a bacterium"), ("weather", "climate"), ("a list", "a tuple in Python"),
         ("RAM", "storage"), ("a comet", "an asteroid"), ("speed", "velocity"), ("TCP", "UDP"),
         ("a crocodile", "an alligator"), ("stocks", "bonds"), ("mitosis", "meiosis"),
         ("a democracy", "a republic"), ("HTTP", "HTTPS"), ("baking soda", "baking powder"),
         ("an economist", "an accountant"), ("a lake", "a pond"), ("frogs", "toads"),
         ("a simile", "a metaphor"), ("SQL", "NoSQL databases"), ("a hurricane", "a tornado"),
         ("empathy", "sympathy"), ("a class", "an object"), ("a loan", "a grant"),
         ("Git", "GitHub"), ("AC", "DC electricity"), ("a psychologist", "a psychiatrist")]
DIFF = ["What is the difference between {} and {}?", "Compare {} and {} in a few sentences."]

ACTIVITIES = ["learning a new language", "sleeping better", "saving money", "staying focused while studying",
              "starting to run", "cooking healthy meals on a budget", "giving a presentation",
              "making friends in a new city", "writing a cover letter", "keeping houseplants alive",
              "preparing for a job interview", "reducing stress", "learning to play the guitar",
              "organizing a small office", "traveling with a small budget", "teaching a child to read",
              "writing clean code", "taking better photos with a phone", "training a puppy",
              "reducing food waste", "managing time at work", "staying hydrated", "planning a birthday party",
              "learning to swim as an adult", "keeping a journal"]
TIPS = ["Give me three tips for {}.", "What is a good plan for {} in one month?",
        "I want to get better at {}. Where should I start?"]

TOPICS = ["the ocean", "autumn leaves", "a lonely robot", "the moon", "a busy city morning", "friendship",
          "a cup of coffee", "an old library", "a thunderstorm", "a cat on a windowsill", "the first day of school",
          "a train journey", "mountains in winter", "a lost key", "a garden in spring", "the night sky",
          "a lighthouse keeper", "a dragon who is afraid of fire", "a time traveler", "a small bakery"]
WRITE = ["Write a short poem about {}.", "Write a short story (about 100 words) about {}.",
         "Write a haiku about {}.", "Describe {} in a vivid paragraph."]

WORD_PROBLEMS = [
    "A shop sells pencils at 3 for $1. How much do 18 pencils cost?",
    "If a train travels 120 km in 2 hours, what is its average speed?",
    "Tom has 5 apples and buys 3 more bags with 4 apples each. How many apples does he have?",
    "A rectangle is 8 cm long and 5 cm wide. What is its area and perimeter?",
    "What is 15% of 240?",
    "If today is Wednesday, what day will it be in 10 days?",
    "A recipe needs 2 eggs for 6 pancakes. How many eggs are needed for 15 pancakes?",
    "Sarah is twice as old as her brother. In 5 years their ages will add up to 40. How old is Sarah now?",
    "A car uses 6 liters of fuel per 100 km. How much fuel does it need for 350 km?",
    "What is the next number in the sequence 2, 6, 12, 20, 30, ...?",
    "If all roses are flowers and some flowers fade quickly, can we conclude that some roses fade quickly? Explain.",
    "A bag has 3 red and 7 blue marbles. What is the probability of drawing a red marble?",
    "How many minutes are there in a week?",
    "A worker earns $18 per hour and works 37.5 hours. What is the weekly pay?",
    "If 4 workers build a wall in 6 days, how long would 8 workers take, assuming the same pace?",
    "What is the sum of the angles in a hexagon?",
    "Convert 3.5 hours into minutes and seconds.",
    "A shirt costs $40 and is discounted by 25%, then by another 10%. What is the final price?",
    "Which is larger: 2 to the power of 10 or 10 to the power of 3?",
    "Three friends share a bill of $87 equally and add a 15% tip. How much does each pay?",
    "A snail climbs 3 meters up a wall each day and slides down 2 meters each night. How many days to reach the top of a 10 meter wall?",
    "If a book has 320 pages and I read 25 pages a day, how many days will it take to finish?",
    "What is the average of 12, 15, 22, 9 and 17?",
    "A tank fills in 4 hours with one pipe and 6 hours with another. How long with both pipes?",
    "Is 221 a prime number? Show your reasoning.",
    "You have a 3-liter jug and a 5-liter jug. How can you measure exactly 4 liters?",
    "If the price of a stock rises 10% and then falls 10%, is it back to where it started?",
    "How many handshakes happen if 10 people each shake hands with everyone else once?",
    "A clock shows 3:15. What is the angle between the hour and minute hands?",
    "Solve for x: 3x + 7 = 25.",
    "What is the least common multiple of 12 and 18?",
    "If a plant grows 2 cm in the first week and doubles its weekly growth each week, how much does it grow in week 4?",
    "Mary is taller than Ann, and Ann is taller than Lucy. Who is the shortest?",
    "A car rental costs $30 per day plus $0.20 per km. What does a 3-day trip of 250 km cost?",
    "How many seconds are in a leap year?",
    "What is 7 times 8 minus 6 divided by 2?",
    "If I invest $1000 at 5% interest compounded yearly, how much will I have after 3 years?",
    "A square has a diagonal of 10 cm. What is its area?",
    "There are 30 students; 18 play football and 12 play tennis, and 5 play both. How many play neither?",
    "What is the median of 4, 9, 1, 7, 3, 8?"]

CHAT = [
    "Hi! How are you today?", "I'm feeling a bit stressed about my exams. Any advice?",
    "Can you recommend a good book for a long flight?", "What should I cook for dinner tonight with rice, eggs and spinach?",
    "Tell me a fun fact about octopuses.", "I just adopted a kitten. What do I need to buy?",
    "What's a good name for a golden retriever puppy?", "Can you tell me a joke about programmers?",
    "I can't decide between learning Spanish or French. What do you think?",
    "My friend is sad because she lost her job. How can I support her?",
    "What are some fun things to do on a rainy weekend?", "Do you have any tips for a first date?",
    "I want to start a podcast. What topics could I cover?", "How do I politely decline an invitation?",
    "What's the best way to remember people's names?", "Can you suggest a weekly workout routine for a beginner?",
    "I'm bored. Suggest a creative hobby I can start today.", "How can I be more productive in the morning?",
    "What should I pack for a weekend camping trip?", "Can you help me write a birthday message for my grandmother?",
    "Write a thank-you note to a teacher.", "Write a polite email asking my manager for a day off next Friday.",
    "Help me write a short product description for a handmade wooden chair.",
    "Write a friendly reminder to my roommates about cleaning the kitchen.",
    "Draft a short apology message for missing a meeting.", "Write a tweet announcing the opening of a new coffee shop.",
    "Suggest five names for a bakery.", "What questions should I ask when renting an apartment?",
    "How do I explain to my parents that I want to change my major?", "Give me a motivational quote and explain it."]

FACTS = ["Who wrote Romeo and Juliet?", "What is the capital of Australia?", "Why is the sky blue?",
         "How many planets are in the solar system?", "What causes earthquakes?", "Why do we have seasons?",
         "How do airplanes stay in the air?", "What is the largest mammal on Earth?", "Why do cats purr?",
         "How does a refrigerator keep food cold?", "What is the boiling point of water at sea level?",
         "Who painted the Mona Lisa?", "How do bees make honey?", "Why does ice float on water?",
         "What is the speed of light?", "How long does it take the Earth to orbit the Sun?",
         "What language has the most native speakers?", "How do solar panels produce electricity?",
         "What is the tallest mountain in the world?", "Why do leaves change color in the fall?",
         "What is the function of the liver?", "How does a rainbow form?", "What did the Industrial Revolution change?",
         "How do vaccines train the immune system?", "What is the difference between a planet and a star?",
         "Why is exercise good for the brain?", "How does GPS know where I am?", "What are the primary colors?",
         "What is an atom made of?", "How do noise-cancelling headphones work?"]

TEXTS = ["The city council voted on Tuesday to expand the bike lane network by 40 kilometers over the next three years. Supporters say it will reduce traffic and pollution, while some shop owners worry about losing parking spaces.",
         "Researchers found that people who took short walks after meals had lower blood sugar levels than those who sat down. The effect appeared even with walks as short as ten minutes.",
         "The company reported higher sales in the third quarter, driven by strong demand for its new phone, but warned that rising component costs could reduce profits next year.",
         "A small town library started lending tools such as drills and ladders. The program became so popular that the library now plans to add gardening equipment and sewing machines.",
         "Scientists observed a group of dolphins using sponges to protect their noses while searching for food on the sea floor, a behavior passed from mothers to their young.",
         "The museum will close for six months for renovations, including a new roof, better lighting, and an accessible entrance. Some exhibitions will travel to other cities during that time.",
         "After a dry summer, farmers in the region harvested fewer tomatoes than usual, and prices at local markets rose by nearly a third.",
         "The school introduced a four-day week for a trial year. Teachers reported better attendance, but some parents struggled to find childcare on Fridays.",
         "A new study suggests that reading fiction may improve empathy, because readers practice imagining the thoughts and feelings of characters.",
         "The volunteers planted two thousand trees along the river to reduce erosion and provide shade for fish during hot months."]
TEXT_TASKS = ["Summarize this in one sentence: {}", "What are the main points of this text? {}",
              "Write a headline for this news item: {}"]

OPEN = ["List five uses of a paperclip.", "Translate 'Good morning, how are you?' into Spanish and French.",
        "Correct the grammar: 'She don't like apples and he have two cat.'",
        "Rewrite this sentence to sound more formal: 'Hey, can you send me that file real quick?'",
        "Give me a list of ten animals that live in the desert.", "What are the pros and cons of working from home?",
        "Explain what a for loop is, with an example in Python.", "What does the Python keyword 'yield' do?",
        "What is a REST API?", "Explain Big O notation with examples.", "What does 'git rebase' do?",
        "How do I center a div in CSS?", "What is the difference between '==' and 'is' in Python?",
        "Write a SQL query that returns the ten most recent orders from a table called orders.",
        "Explain what a race condition is.", "What is a unit test and why is it useful?",
        "Write a bash command that counts the lines in all .txt files in a folder.",
        "What is the purpose of a virtual environment in Python?", "Explain the difference between a process and a thread.",
        "What happens when you type a URL into a browser?", "Create a simple weekly meal plan for a vegetarian.",
        "Write a limerick about a forgetful wizard.", "Invent a new board game and describe its rules briefly.",
        "Describe a perfect day in a city you'd like to visit.", "What are the benefits of reading every day?",
        "Argue for and against school uniforms.", "What would happen if the Moon disappeared?",
        "Give three arguments for renewable energy.", "What are good habits for a healthy life?",
        "Explain the rules of chess in a few sentences.", "Make a packing list for a beach holiday.",
        "What makes a good leader?", "Summarize the plot of Cinderella in three sentences.",
        "What are three important inventions of the 20th century and why?",
        "Write a dialogue between a customer and a waiter in a restaurant.",
        "Explain how to change a flat tire step by step.", "How do I make a cup of tea?",
        "What are the steps to plant a tree?", "Plan a three-day trip to Rome.",
        "Explain how to solve a quadratic equation."]


def build() -> list[dict]:
    items: list[tuple[str, str]] = []
    items += [("explain", t.format(c)) for i, c in enumerate(CONCEPTS) for t in [EXPLAIN[i % 4], EXPLAIN[(i + 1) % 4]]]
    items += [("code", CODE[i % 3].format(t)) for i, t in enumerate(CODE_TASKS)]
    items += [("code", CODE[(i + 1) % 3].format(t)) for i, t in enumerate(CODE_TASKS)]
    items += [("compare", DIFF[i % 2].format(a, b)) for i, (a, b) in enumerate(PAIRS)]
    items += [("advice", t.format(a)) for i, a in enumerate(ACTIVITIES) for t in [TIPS[i % 3], TIPS[(i + 1) % 3]]]
    items += [("creative", t.format(x)) for i, x in enumerate(TOPICS) for t in [WRITE[i % 4], WRITE[(i + 2) % 4]]]
    items += [("reasoning", p) for p in WORD_PROBLEMS]
    items += [("chat", p) for p in CHAT]
    items += [("facts", p) for p in FACTS]
    items += [("summarize", TEXT_TASKS[i % 3].format(t)) for i, t in enumerate(TEXTS)]
    items += [("summarize", TEXT_TASKS[(i + 1) % 3].format(t)) for i, t in enumerate(TEXTS)]
    items += [("open", p) for p in OPEN]
    seen, out = set(), []
    for cat, text in items:
        if text in seen:
            continue
        seen.add(text)
        out.append({"id": len(out), "category": cat, "prompt": text, "split": split_of(len(out))})
    return out


def split_of(idx: int) -> str:
    """Fixed split by position: 5 of every 9 prompts are held out (>= 200)."""
    return "heldout" if idx % 9 in (0, 2, 4, 6, 8) else "train"


def main():
    items = build()
    path = Path(__file__).with_name("prompts.jsonl")
    with open(path, "w") as f:
        for it in items:
            f.write(json.dumps(it) + "\n")
    n_h = sum(it["split"] == "heldout" for it in items)
    print(f"{len(items)} prompts, {n_h} held-out, {len(items) - n_h} train -> {path}")


if __name__ == "__main__":
    main()
