"""The original ScientistCloud clients' wire contract, checked against sclib."""
