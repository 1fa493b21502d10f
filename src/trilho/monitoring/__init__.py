"""What a served model met: data drift between tables, the served traffic against the
training data, and the prediction log every answer is written to."""
