"""The perpetual-futures venue kinds' registration (issue 17: being built; registers nothing yet)."""
