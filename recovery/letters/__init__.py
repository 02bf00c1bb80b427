"""The letter lifecycle and a letter's identity across plans (issue 15, parts 1 and 2)."""
