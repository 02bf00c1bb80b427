"""Classification (issue 5): fingerprints that group the same failure, ordered rules that give
each dead letter a category and a disposition, duplicates and broker-side expiry."""
