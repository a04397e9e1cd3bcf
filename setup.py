"""Which files the distribution carries; all other metadata is in pyproject.toml.

The repository keeps ``dashboard/`` and ``grafana/`` at its root; the wheel carries them inside
the package as ``jeeves_control_tower.dashboard`` and ``jeeves_control_tower.grafana`` (never as
top-level names in site-packages). Discovery is dynamic: a new package under ``src/`` and
every file under ``grafana/`` (``__pycache__`` aside) is shipped without editing this file.
"""

from setuptools import find_namespace_packages, find_packages, setup

DASHBOARD = "jeeves_control_tower.dashboard"
GRAFANA = "jeeves_control_tower.grafana"
grafana = [
    GRAFANA,
    *(
        f"{GRAFANA}.{name}"
        for name in find_namespace_packages("grafana", exclude=["*__pycache__*"])
    ),
]

setup(
    package_dir={"": "src", DASHBOARD: "dashboard", GRAFANA: "grafana"},
    packages=[*find_packages("src"), DASHBOARD, *grafana],
    package_data={
        "jeeves_control_tower": ["py.typed"],
        "jeeves_control_tower.ipc.adapters.grpc": ["commbus.proto", "*.pyi"],
        **{name: ["*"] for name in grafana},
    },
)
