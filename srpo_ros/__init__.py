"""The ROS 2 nodes of srpo: thin adapters from topics, services and parameters to the ROS-agnostic cores.

``camera_node`` (OpenCV frames), ``arm_node`` (a simulated or real arm behind the safety filter), ``policy_node``
(a runtime backend with the ``ActionChunker``) and ``recorder_node`` (episodes through the shared ``EpisodeBuilder``).
The logic that decides anything lives in ``srpo.robot`` and ``srpo.runtime`` and is tested without ROS; these modules
only convert messages and call it. They need rclpy (the ``[ros]`` extra, or a ROS 2 Jazzy install).
"""
