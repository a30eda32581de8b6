from gemma_edge.cli import entry

entry()
