from tests.engine.conftest import sandbox, sandbox_session

__all__ = ["sandbox", "sandbox_session"]
