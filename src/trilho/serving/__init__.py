"""Answering with a logged model: the request protocol, the HTTP server, the loaded model that
follows its alias, and batch prediction."""
