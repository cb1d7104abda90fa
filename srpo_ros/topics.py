"""Topic and service names of the node graph, defined once for the nodes, the launch file, tests and the README."""

from __future__ import annotations

CAMERA_IMAGE = "/srpo/camera/{}/image_raw"  # sensor_msgs/Image (rgb8), one per camera of the spec
CAMERA_INFO = "/srpo/camera/{}/camera_info"  # sensor_msgs/CameraInfo
JOINT_STATES = "/srpo/joint_states"  # sensor_msgs/JointState: the spec's proprio names and values, stamped
EE_POSE = "/srpo/ee_pose"  # geometry_msgs/PoseStamped (arm node, sim and real)
INSTRUCTION = "/srpo/instruction"  # std_msgs/String, transient local: late joiners get the current one
ACTION = "/srpo/action"  # sensor_msgs/JointState: the policy's command (action names), stamped with its observation
EXECUTED_ACTION = "/srpo/executed_action"  # sensor_msgs/JointState: what the arm ran after the state with that stamp
EPISODE_REQUEST = "/srpo/arm/episode_request"  # std_msgs/String (JSON {task, split, init_state_id}): sim: reset to it
EPISODE_INFO = "/srpo/episode_info"  # std_msgs/String (JSON), transient local: the sim episode's task, split, state,
# number; republished at its end with "ended": true and "success"
EPISODE_END = "/srpo/episode_end"  # std_msgs/Bool: the simulated episode ended; data = the success predicate
ACTION_CHUNK = "/srpo/policy/action_chunk"  # trajectory_msgs/JointTrajectory: the chunk, stamped with its observation
DECISION = "/srpo/policy/decision"  # std_msgs/String (JSON), transient local (20): chunk, log-prob, distribution
POLICY_INFO = "/srpo/policy/info"  # std_msgs/String (JSON), transient local: version, backend, device, temperature
POLICY_PUSH = "/srpo/policy/push"  # std_msgs/String: a candidate version (path or registry name) to validate
POLICY_PUSH_RESULT = "/srpo/policy/push_result"  # std_msgs/String (JSON), transient local: accepted or why not
POLICY_STATUS = "/srpo/policy/status"  # std_msgs/String: "acting" or "waiting: <why>"
ARM_STATUS = "/srpo/arm/status"  # std_msgs/String: "moving", "holding: <why>", "dry-run"
DIAGNOSTICS = "/diagnostics"  # diagnostic_msgs/DiagnosticArray
CLOCK = "/clock"  # rosgraph_msgs/Clock: simulated time, published by a sim arm with sim_clock (nodes: use_sim_time)

ESTOP = "/srpo/estop"  # std_srvs/SetBool: true engages (latched), false releases
POLICY_ROLLBACK = "/srpo/policy/rollback"  # std_srvs/Trigger: back to the previous (validated) version
RESET = "/srpo/reset"  # std_srvs/Trigger: start a new episode (sim: reset the simulator)
RECORDER_START = "/srpo/recorder/start"  # std_srvs/Trigger
RECORDER_STOP = "/srpo/recorder/stop"  # std_srvs/Trigger: stop, success unknown
RECORDER_LABEL = "/srpo/recorder/label"  # std_srvs/SetBool: stop with success = data

TOPICS = {k: v for k, v in globals().items() if k.isupper() and isinstance(v, str)}
