"""GRPO of a VLM on a Ray cluster with verl: the launcher (`launch.py`) and the reward entry
points verl loads by file path (`reward.py`)."""
