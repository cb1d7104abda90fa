"""MJCF description of the tabletop scene: a floating parallel gripper, three movable objects, a tray, a target square,
a spring-loaded button and a cabinet with a drawer.

The gripper is a free body welded (softly) to a mocap target driven in Cartesian space, which gives the same end-effector delta interface as LIBERO's
operational-space controller without simulating (and tuning) a 7-DoF arm. The weld (rather than a mocap gripper)
matters: a mocap body has zero velocity for the contact solver, so friction could never lift a grasped object. Fixed furniture (tray, square, button,
cabinet) is moved per initial state by editing ``model.body_pos``; movable objects have free joints.

Rendering is configured for CPU speed: no shadows, no MSAA, flat materials (shadows and 4x MSAA cost ~20x on CPU).
"""

from __future__ import annotations

# Geometry constants shared with tasks.py and experts.py (metres).
CUBE_HALF = 0.02
CYL_RADIUS = 0.02
CYL_HALF_HEIGHT = 0.025
TRAY_HALF = 0.065  # outer half-size of the tray
TRAY_WALL = 0.004
TRAY_FLOOR = 0.006  # floor thickness: objects in the tray rest on z = TRAY_FLOOR
TRAY_WALL_HEIGHT = 0.03
SQUARE_HALF = 0.05
BUTTON_TRAVEL = 0.012
BUTTON_TOP = 0.036  # z of the cap's top surface when released
DRAWER_TRAVEL = 0.15
HANDLE_STANDOFF = 0.045  # y distance from drawer front face to the handle bar centre
HANDLE_Z = 0.055
CABINET_FRONT_Y = 0.0  # in cabinet frame: drawer front face when closed
FINGER_MAX = 0.04  # finger slide range: 0 = open, FINGER_MAX = closed
FINGER_OPEN_FACE = 0.044  # half gap between the finger pads when open
GRIP_TO_TIP = 0.012  # the grip site sits this far above the fingertips
GRIP_Z_MIN = 0.014  # lowest grip-site height (keeps fingertips 2 mm above the table)

MOVABLE_OBJECTS = ("red_cube", "blue_cube", "green_cylinder")
VISIBLE_TABLE = ((-0.25, 0.25), (-0.24, 0.08))  # (x, y) ranges of the table in both cameras' view
# Evaluation-only scenery (``perturbations.py``): invisible (alpha 0), collision-free and parked out of view unless a
# perturbation shows it, so an unperturbed scene renders and simulates exactly as without it.
_DISTRACTOR_SHAPES = {  # name: (MJCF geom type, size, colour, half height: it stands on the table at z = that)
    "purple_mug": ("cylinder", "0.028 0.03", "0.5 0.2 0.65", 0.03),
    "pink_ball": ("sphere", "0.025", "0.95 0.5 0.72", 0.025),
    "teal_block": ("box", "0.03 0.018 0.025", "0.1 0.6 0.6", 0.025),
    "black_bottle": ("capsule", "0.018 0.027", "0.12 0.12 0.14", 0.045),
}
DISTRACTORS = tuple(_DISTRACTOR_SHAPES)
DISTRACTOR_HALF_HEIGHT = {name: shape[3] for name, shape in _DISTRACTOR_SHAPES.items()}
DISTRACTOR_PARK = (0.0, 3.0, -1.0)  # far behind the backdrop and below the floor: outside every camera's view
SCENERY_GEOMS = ("backdrop", "floor")
TEXTURED_MATERIALS = ("mat_checker", "mat_grain", "mat_stripes", "mat_marble")


def build_scene_xml(max_image_size: int = 256, scenery: bool = True) -> str:
    """The scene as an MJCF string; ``max_image_size`` sizes the offscreen framebuffer. ``scenery=False`` leaves out
    the evaluation-only backdrop, floor, textures and distractors (the scene they must not change: tested)."""
    assets = scenery_geoms = ""
    if scenery:
        assets, scenery_geoms = _SCENERY_ASSETS, _scenery_geoms()
    return f"""
<mujoco model="srpo_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.005" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <!-- what MuJoCo derives from the scene without the scenery: the renderer sets its clip planes from extent, so
       the far-parked distractors would otherwise change the wrist camera's pixels -->
  <statistic extent="1.1070682002478438" center="0 0.05 -0.02" meanmass="0.1601501970142912"
             meansize="0.06587072959114362"/>
  <visual>
    <global offwidth="{max_image_size}" offheight="{max_image_size}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <default>
    <geom friction="1.0 0.01 0.001" solref="0.01 1" condim="4"/>
    <default class="visual"><geom contype="0" conaffinity="0" condim="1"/></default>
    <default class="furniture"><geom rgba="0.55 0.42 0.3 1"/></default>
  </default>
{assets}  <worldbody>
    <light pos="0.2 -0.4 1.0" dir="-0.2 0.4 -1" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="box" pos="0 0.05 -0.02" size="0.42 0.36 0.02" rgba="0.78 0.74 0.66 1"/>
{scenery_geoms}    <camera name="agentview" pos="0 -0.52 0.42" xyaxes="1 0 0 0 0.62 0.785" fovy="52"/>

    <body name="hand_target" mocap="true" pos="0 -0.12 0.2"/>
    <body name="hand" pos="0 -0.12 0.2" gravcomp="1">
      <freejoint name="hand"/>
      <geom name="palm" type="box" pos="0 0 0.05" size="0.056 0.014 0.01" rgba="0.25 0.25 0.28 1"/>
      <geom name="wrist_link" type="cylinder" pos="0 0 0.09" size="0.018 0.03" rgba="0.35 0.35 0.4 1" class="visual"/>
      <camera name="wrist" pos="0 -0.07 0.065" xyaxes="1 0 0 0 0.866 0.5" fovy="80"/>
      <site name="grip" pos="0 0 0" size="0.004" rgba="1 0 1 0" group="5"/>
      <body name="finger_left" pos="-0.05 0 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="1 0 0" range="0 {FINGER_MAX}" damping="2" armature="0.01"/>
        <geom name="finger_left" type="box" pos="0 0 0.018" size="0.006 0.012 0.03" rgba="0.3 0.3 0.33 1" friction="1.5 0.01 0.001" mass="0.05"/>
      </body>
      <body name="finger_right" pos="0.05 0 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="-1 0 0" range="0 {FINGER_MAX}" damping="2" armature="0.01"/>
        <geom name="finger_right" type="box" pos="0 0 0.018" size="0.006 0.012 0.03" rgba="0.3 0.3 0.33 1" friction="1.5 0.01 0.001" mass="0.05"/>
      </body>
    </body>

    <body name="red_cube" pos="0 0 {CUBE_HALF}">
      <freejoint name="red_cube"/>
      <geom name="red_cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="0.85 0.12 0.1 1" mass="0.05"/>
    </body>
    <body name="blue_cube" pos="0.1 0 {CUBE_HALF}">
      <freejoint name="blue_cube"/>
      <geom name="blue_cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="0.12 0.25 0.85 1" mass="0.08"/>
    </body>
    <body name="green_cylinder" pos="-0.1 0 {CYL_HALF_HEIGHT}">
      <freejoint name="green_cylinder"/>
      <geom name="green_cylinder" type="cylinder" size="{CYL_RADIUS} {CYL_HALF_HEIGHT}" rgba="0.1 0.7 0.2 1" mass="0.05"/>
    </body>

    <body name="tray" pos="0.15 -0.1 0">
      <geom name="tray_floor" type="box" pos="0 0 {TRAY_FLOOR / 2}" size="{TRAY_HALF} {TRAY_HALF} {TRAY_FLOOR / 2}" rgba="0.92 0.92 0.92 1"/>
      <geom type="box" pos="{TRAY_HALF - TRAY_WALL} 0 {TRAY_WALL_HEIGHT / 2}" size="{TRAY_WALL} {TRAY_HALF} {TRAY_WALL_HEIGHT / 2}" rgba="0.85 0.85 0.85 1"/>
      <geom type="box" pos="{-(TRAY_HALF - TRAY_WALL)} 0 {TRAY_WALL_HEIGHT / 2}" size="{TRAY_WALL} {TRAY_HALF} {TRAY_WALL_HEIGHT / 2}" rgba="0.85 0.85 0.85 1"/>
      <geom type="box" pos="0 {TRAY_HALF - TRAY_WALL} {TRAY_WALL_HEIGHT / 2}" size="{TRAY_HALF} {TRAY_WALL} {TRAY_WALL_HEIGHT / 2}" rgba="0.85 0.85 0.85 1"/>
      <geom type="box" pos="0 {-(TRAY_HALF - TRAY_WALL)} {TRAY_WALL_HEIGHT / 2}" size="{TRAY_HALF} {TRAY_WALL} {TRAY_WALL_HEIGHT / 2}" rgba="0.85 0.85 0.85 1"/>
    </body>

    <body name="square" pos="-0.15 -0.1 0">
      <geom name="square" type="box" class="visual" pos="0 0 0.0005" size="{SQUARE_HALF} {SQUARE_HALF} 0.0005" rgba="0.95 0.85 0.1 1"/>
    </body>

    <body name="button_base" pos="0.17 0.17 0">
      <geom name="button_base" type="box" pos="0 0 0.012" size="0.035 0.035 0.012" rgba="0.2 0.2 0.22 1"/>
      <body name="button" pos="0 0 {BUTTON_TOP - 0.008}">
        <joint name="button" type="slide" axis="0 0 1" range="{-BUTTON_TRAVEL} 0" stiffness="60" springref="0" damping="1"/>
        <geom name="button" type="cylinder" size="0.024 0.008" rgba="0.95 0.45 0.05 1" mass="0.02"/>
      </body>
    </body>

    <body name="cabinet" pos="-0.17 0.2 0">
      <geom type="box" class="furniture" pos="0 0.075 0.004" size="0.09 0.075 0.004"/>
      <geom type="box" class="furniture" pos="0 0.075 0.116" size="0.09 0.075 0.004"/>
      <geom type="box" class="furniture" pos="-0.086 0.075 0.06" size="0.004 0.075 0.052"/>
      <geom type="box" class="furniture" pos="0.086 0.075 0.06" size="0.004 0.075 0.052"/>
      <geom type="box" class="furniture" pos="0 0.146 0.06" size="0.09 0.004 0.052"/>
      <body name="drawer" pos="0 0 0">
        <joint name="drawer" type="slide" axis="0 -1 0" range="0 {DRAWER_TRAVEL}" damping="8" frictionloss="0.05"/>
        <geom name="drawer_front" type="box" pos="0 0.006 0.06" size="0.08 0.006 0.05" rgba="0.62 0.5 0.36 1" contype="2" conaffinity="1"/>
        <geom type="box" pos="0 0.075 0.014" size="0.078 0.065 0.004" rgba="0.6 0.48 0.34 1" contype="2" conaffinity="1"/>
        <geom type="box" pos="-0.074 0.075 0.04" size="0.004 0.065 0.025" rgba="0.6 0.48 0.34 1" contype="2" conaffinity="1"/>
        <geom type="box" pos="0.074 0.075 0.04" size="0.004 0.065 0.025" rgba="0.6 0.48 0.34 1" contype="2" conaffinity="1"/>
        <geom name="handle" type="box" pos="0 {-HANDLE_STANDOFF} {HANDLE_Z}" size="0.045 0.005 0.005" rgba="0.8 0.8 0.82 1" contype="2" conaffinity="1"/>
        <geom type="box" pos="-0.04 {-HANDLE_STANDOFF / 2} {HANDLE_Z}" size="0.004 {HANDLE_STANDOFF / 2} 0.004" rgba="0.8 0.8 0.82 1" contype="2" conaffinity="1"/>
        <geom type="box" pos="0.04 {-HANDLE_STANDOFF / 2} {HANDLE_Z}" size="0.004 {HANDLE_STANDOFF / 2} 0.004" rgba="0.8 0.8 0.82 1" contype="2" conaffinity="1"/>
      </body>
    </body>
  </worldbody>
  <contact>
    <exclude body1="cabinet" body2="drawer"/>
    <exclude body1="button_base" body2="button"/>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <equality>
    <weld body1="hand_target" body2="hand" solref="0.01 1" solimp="0.95 0.99 0.001"/>
  </equality>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="120" ctrlrange="0 {FINGER_MAX}" forcerange="-6 6"/>
    <position name="finger_right" joint="finger_right" kp="120" ctrlrange="0 {FINGER_MAX}" forcerange="-6 6"/>
  </actuator>
</mujoco>
"""


_SCENERY_ASSETS = """\
  <asset>
    <texture name="tex_checker" type="2d" builtin="checker" rgb1="1 1 1" rgb2="0.55 0.55 0.55" width="64" height="64"/>
    <texture name="tex_grain" type="2d" builtin="flat" rgb1="0.9 0.9 0.9" mark="random" markrgb="0.45 0.45 0.45" random="0.3" width="128" height="128"/>
    <texture name="tex_stripes" type="2d" builtin="checker" rgb1="1 1 1" rgb2="0.4 0.4 0.4" width="64" height="4"/>
    <texture name="tex_marble" type="2d" builtin="gradient" rgb1="1 1 1" rgb2="0.35 0.35 0.35" width="64" height="64"/>
    <material name="mat_checker" texture="tex_checker" texrepeat="6 6"/>
    <material name="mat_grain" texture="tex_grain" texrepeat="2 2"/>
    <material name="mat_stripes" texture="tex_stripes" texrepeat="10 1"/>
    <material name="mat_marble" texture="tex_marble" texrepeat="3 3"/>
  </asset>
"""


def _scenery_geoms() -> str:
    px, py, pz = DISTRACTOR_PARK
    bodies = "".join(
        f"""\
    <body name="{name}" pos="{px + 0.2 * k} {py} {pz}">
      <geom name="{name}" type="{kind}" size="{size}" rgba="{rgb} 0" contype="0" conaffinity="0"/>
    </body>
""" for k, (name, (kind, size, rgb, _)) in enumerate(_DISTRACTOR_SHAPES.items()))
    return """\
    <geom name="backdrop" type="box" class="visual" pos="0 0.75 0.3" size="1.6 0.01 0.7" rgba="0.6 0.6 0.6 0"/>
    <geom name="floor" type="plane" class="visual" pos="0 0 -0.3" size="3 3 0.1" rgba="0.5 0.5 0.5 0"/>
""" + bodies
