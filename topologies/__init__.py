"""Lab around lbrp: Mininet topology, backend server and load generator."""
