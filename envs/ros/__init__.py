"""A real arm behind rosbridge: the arm env (``arm``), its typed config (``config``),
the always-on safety filter (``safety``), the rosbridge client (``link``) and messages
(``messages``), teleop recording (``recording``), and a Meta-World arm served over
rosbridge for trying it all without a robot (``rosbridge_server``, ``sim_bridge``)."""
