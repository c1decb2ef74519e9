"""Random ``adjective_surname`` names for services created without ``--name``, in Docker's style.

dockerd names such services with its names generator (``pkg/namesgenerator``): a mood adjective and
the surname of a notable scientist or engineer, joined by ``_``. The word lists here are our own
selection in that style; a clash with an existing service is retried with a digit appended, as Docker
does with ``GetRandomName(retry)``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

ADJECTIVES = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "awesome", "blissful", "bold",
    "brave", "busy", "calm", "charming", "cheerful", "clever", "cool", "curious", "dazzling",
    "determined", "dreamy", "eager", "ecstatic", "elastic", "elated", "elegant", "epic", "fervent",
    "festive", "focused", "friendly", "funny", "gallant", "gifted", "goofy", "gracious", "happy",
    "hopeful", "hungry", "infallible", "inspiring", "jolly", "keen", "kind", "laughing", "loving",
    "lucid", "magical", "modest", "nervous", "nice", "nifty", "nostalgic", "optimistic", "peaceful",
    "pensive", "practical", "priceless", "quirky", "quizzical", "relaxed", "reverent", "romantic",
    "serene", "sharp", "silly", "sleepy", "stoic", "strange", "sweet", "tender", "thirsty", "trusting",
    "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful", "youthful", "zealous", "zen",
)

SURNAMES = (
    "agnesi", "archimedes", "babbage", "bardeen", "bartik", "bell", "bohr", "booth", "borg", "bose",
    "brahmagupta", "brattain", "carson", "cerf", "chandrasekhar", "cohen", "curie", "darwin", "dijkstra",
    "einstein", "elion", "engelbart", "euclid", "euler", "faraday", "fermat", "fermi", "feynman",
    "franklin", "galileo", "gauss", "goldberg", "goodall", "hamilton", "hawking", "heisenberg",
    "hertz", "hodgkin", "hopper", "hypatia", "jang", "jennings", "johnson", "kalam", "kapitsa",
    "kepler", "knuth", "kowalevski", "lamarr", "lamport", "leakey", "leavitt", "liskov", "lovelace",
    "lumiere", "mahavira", "mayer", "mccarthy", "meitner", "mendel", "minsky", "mirzakhani", "morse",
    "napier", "newton", "nobel", "noether", "pascal", "pasteur", "payne", "perlman", "pike", "planck",
    "raman", "ramanujan", "ritchie", "rosalind", "saha", "shannon", "shockley", "sinoussi", "stallman",
    "swartz", "tesla", "thompson", "torvalds", "turing", "varahamihira", "volhard", "wescoff", "wiles",
    "williams", "wilson", "wozniak", "wright", "yalow", "yonath",
)


def random_name(retry: int = 0) -> str:
    """``adjective_surname``; from the second try on a digit is appended to dodge a clash."""
    while True:
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
        if name == "boring_wozniak":  # Docker's one exception: Steve Wozniak is not boring
            continue
        if retry > 0:
            name += str(secrets.randbelow(10))
        return name


def unique_name(taken: Callable[[str], bool], attempts: int = 10) -> str:
    """A random name for which ``taken(name)`` is false (the last attempt is returned regardless)."""
    name = random_name()
    for retry in range(1, attempts):
        if not taken(name):
            return name
        name = random_name(retry)
    return name
