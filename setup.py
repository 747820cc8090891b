"""pip install path for vtrack (the ROS 2 build uses CMakeLists.txt and package.xml)."""
from pathlib import Path

from setuptools import find_packages, setup


def requirements(name: str) -> list[str]:
    lines = (Path(__file__).parent / "requirements" / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="vtrack",
    version="0.1.0",
    description="Visual object tracking for ROS 2 robots: SiamFC, FDN, FCNT, RAR and OpenCV baselines",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vtrack_core", "vtrack_core.*", "vtrack_ros", "vtrack_ros.*"]),
    package_data={"vtrack_core": ["weights/*.pt", "weights/*.md", "weights/*.json"]},
    install_requires=requirements("core.txt") + ["torch>=2.2"],
    extras_require={"ros": requirements("ros.txt"), "test": requirements("test.txt")},
    entry_points={
        "console_scripts": [
            "vtrack = vtrack_core.cli:main",
            "tracker_node = vtrack_ros.tracker_node:main",
            "video_publisher = vtrack_ros.video_publisher:main",
            "vtrack-init = vtrack_ros.init_client:main",
            "vtrack-demo = vtrack_ros.demo:main",
        ],
    },
)
