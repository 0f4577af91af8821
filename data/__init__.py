"""Bundled data: the tag vocabulary and the generated demo world."""
