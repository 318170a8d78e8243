"""SLOs, capacity search, trial cache, sweeps, plans, reports, plots, and the capsim CLI.

One subpackage a question, imports flowing one way (tests/test_layering.py):
- capacity/: what capacity is and how it is found: SLOs, the search, trials and their cache, jobs, confirmation.
- load/: latency against load: sweeps, serving metrics, vLLM-format results, comparisons, validation.
- experiments/: configs as the peers write them (Sarathi-Serve, Etalon), their conventions and SLO flags.
- plan/: the cheapest deployment, prices, disaggregated splits.
- report/: every file written, table printed and plot drawn.
- cli/: the `capsim` command (click only); options/ declares the flags.
errors.py holds the one error every command turns into a line and exit 2.
"""
