"""The RL and RFT stages' machinery: the rollout side as child processes (inference server, data-plane
driver with the sampler, rollout manager and agent workers), group records → trie trajectories with
group-normalised advantages, and the policy update.

processes (children that die with the job) → rollouts (the driver protocol) → batch (records → trajectories)
→ stages/rl.py, stages/rft.py.
"""
