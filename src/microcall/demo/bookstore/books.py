"""The bookstore's books: what the Catalog's database is seeded with and Recommendations picks from.

Ids and titles are the Recommendations example's (examples/recommendations),
so both services agree on what book 4 is.
"""

from __future__ import annotations

from dataclasses import dataclass

# The categories of protos/recommendations.proto, by their enum names.
MYSTERY = "MYSTERY"
SCIENCE_FICTION = "SCIENCE_FICTION"
SELF_HELP = "SELF_HELP"
CATEGORIES = (MYSTERY, SCIENCE_FICTION, SELF_HELP)


@dataclass(frozen=True, slots=True)
class Book:
    """One book of the seed data."""

    id: int
    title: str
    author: str
    year: int
    category: str
    price_cents: int


BOOKS: tuple[Book, ...] = (
    Book(1, "The Maltese Falcon", "Dashiell Hammett", 1930, MYSTERY, 1299),
    Book(2, "Murder on the Orient Express", "Agatha Christie", 1934, MYSTERY, 999),
    Book(3, "The Hound of the Baskervilles", "Arthur Conan Doyle", 1902, MYSTERY, 799),
    Book(4, "The Hitchhiker's Guide to the Galaxy", "Douglas Adams", 1979, SCIENCE_FICTION, 1099),
    Book(5, "Ender's Game", "Orson Scott Card", 1985, SCIENCE_FICTION, 1199),
    Book(6, "The Dune Chronicles", "Frank Herbert", 1965, SCIENCE_FICTION, 1899),
    Book(7, "The 7 Habits of Highly Effective People", "Stephen Covey", 1989, SELF_HELP, 1599),
    Book(8, "How to Win Friends and Influence People", "Dale Carnegie", 1936, SELF_HELP, 1399),
    Book(9, "Man's Search for Meaning", "Viktor Frankl", 1946, SELF_HELP, 1099),
    Book(10, "The Big Sleep", "Raymond Chandler", 1939, MYSTERY, 1199),
    Book(11, "Foundation", "Isaac Asimov", 1951, SCIENCE_FICTION, 999),
    Book(12, "Thinking, Fast and Slow", "Daniel Kahneman", 2011, SELF_HELP, 1799),
)


def by_category(category: str) -> list[Book]:
    """The seed books of one category, in id order."""
    return [book for book in BOOKS if book.category == category]
