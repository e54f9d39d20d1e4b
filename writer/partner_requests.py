"""The writer's public door for a chapter asked on someone's behalf by another app: the partner API
(brands.partners) asks for a reader's branded next chapter here, through the same service as the pages."""

from __future__ import annotations

from writer.services import generation_request_create

__all__ = ["generation_request_create"]
