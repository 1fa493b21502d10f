"""``trilho init``: profile a file in bounded chunks, decide each column's role, and propose a
commented experiment file. profile reads; propose decides; roles and census are pure."""
