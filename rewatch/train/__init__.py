"""Training: multi-task SFT and GRPO with the O&R reward (TRL on one box), verl on a cluster."""
