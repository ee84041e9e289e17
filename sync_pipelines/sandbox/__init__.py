"""Local simulators of Harvest v2, HubSpot CRM and QuickBooks Online on their real paths.

```python
from sync_pipelines.sandbox import SandboxServer, generate_fixture
fixture, rules_yaml = generate_fixture(clients=8, entries=400, seed=7, month="2026-10")
with SandboxServer(fixture) as sb:
    sb.env()      # DESIGN §8 variables pointing at sb.base_url
    sb.state()    # current state in the fixture format
```
See docs/sandbox.md.
"""

from .fixture import FixtureError, load_fixture_file, validate_fixture
from .generator import generate_fixture
from .limits import FaultConfig, RateLimits
from .server import SandboxServer

__all__ = [
    "SandboxServer",
    "generate_fixture",
    "FixtureError",
    "validate_fixture",
    "load_fixture_file",
    "RateLimits",
    "FaultConfig",
]
