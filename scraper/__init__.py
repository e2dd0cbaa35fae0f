"""scraper: an async, concurrent web crawler that stores what it finds in SQLite."""

__version__ = "0.1.0"
