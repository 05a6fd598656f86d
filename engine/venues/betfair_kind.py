"""The ``betfair`` venue kind's registration (issue 17: being built; registers nothing yet)."""
