"""srpo_trainer: the offline side. VLA policies, normalisation, supervised fine-tuning, evaluation (and, in later
issues, the latent progress reward and the SRPO trainer). It reads episodes through ``srpo.episodes`` and never
imports ROS.
"""
