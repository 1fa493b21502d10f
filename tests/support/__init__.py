"""What the tests share: the services they start, the public data sets, a headless browser."""
