"""GET /v1/models: the loaded model and the ones this build can serve."""

from __future__ import annotations

from fastapi import APIRouter

from model_core import CONFIGS

from ..auth import Tenant
from ..dependencies import EngineDep
from ..openapi import problem_responses
from ..schemas import ModelInfo, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelsResponse, responses=problem_responses(401, 503),
            summary="The loaded model")
async def models(engine: EngineDep, tenant: Tenant) -> ModelsResponse:
    """Name, size, precision and device of the model this process serves (one per process, set by SAM2_MODEL),
    and every model name it could be started with."""
    model = engine.model
    params = list(model.parameters())
    info = ModelInfo(
        name=model.cfg.name,
        version=model.cfg.version,
        image_size=model.image_size,
        parameters=sum(p.numel() for p in params),
        size_mb=round(sum(p.numel() * p.element_size() for p in params) / 2**20, 2),
        dtype=engine.dtype_name,
        device=str(engine.device),
        random_weights=bool(getattr(model, "random_weights", False)),
    )
    return ModelsResponse(loaded=info, available=sorted(CONFIGS))
