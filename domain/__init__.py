"""The rules of orgsync as plain values and pure functions: no I/O, standard library only."""
