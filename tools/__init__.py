"""Programs built on the formula that are not minion code: the main job and the proof report."""
