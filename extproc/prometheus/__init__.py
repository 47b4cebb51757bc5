"""The Prometheus scrape endpoint: sidegate's metrics and Envoy's stats on the probe port."""
