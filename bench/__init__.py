"""The throughput benchmark (`make bench`): see bench/run.py and README "Performance"."""
