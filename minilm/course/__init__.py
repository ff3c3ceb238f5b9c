"""The course's tooling: the lesson harness, `minilm course`'s runner, and the assignments (catalog, markers, handouts, grading)."""
