"""Library indexing: scan -> decode -> embed -> store, into a SQLite catalog and FAISS vector indexes."""
