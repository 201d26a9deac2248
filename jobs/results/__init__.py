"""From events to results: the aggregator, trial rows, tables, plots, reports and the live displays."""
