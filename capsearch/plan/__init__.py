"""Plans: the cheapest deployment that meets an SLO, prices, disaggregated prefill:decode splits."""
