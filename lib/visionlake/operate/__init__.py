"""Operating the product: the CLI, the demo pipeline and its data, the HTML report, notebook helpers."""
