"""Request and response bodies of the REST API (pydantic), as they appear in the OpenAPI document."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import (
    BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema, field_validator, model_validator,
)

# a 32x24 PNG (a green box on a gradient): the examples in /docs run as they are
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAYCAIAAAAUMWhjAAAB3ElEQVRIDY3BEZcQYRiA0fvZc+I4jofjePmlYClYCqJgqTNnKVgKloIo"
    "iIIoiAbieH5H/YS5d43/IiIiIiIiIiIiIiIiIiIiWvMMERERERERERERERERERERrXmOiIiIiIiIiIiIiIiIiIiI1rxARERERERERERE"
    "REREREREa14iIiIiIiIiIiIiIiIiIiKiNRsiIiIiIiIiIiIiIiIiIiJa8woREREdT6cLtjc7EREREdGa14iIiOh4PF2wvd2JiIiIiNbc"
    "ICIiouPhdMH2biciIiIiWjOIiIjouD9dsH3YiYiIiIjW3CIiIqLj/emC7eNORERERLTmDhERER13pwu2TzsRERER0Zr3iIiI6Lg9XbB9"
    "3omIiIiI1twjIiKiY04XbF92IiIiIqI1D4iIiOi4OV2wfduJiIiIiNY8IiIiouP16YLtx05EREREtOYJERERHa9OF2y/diIiIiKiNV8R"
    "ERERERERERERERERERHRmu+IiIiIiIiIiIiIiIiIiIhozU9ERERERERERERERERERES05jciIiIiIiIiIiIiIiIiIiJa8wcRERERERER"
    "ERERERERERGt+YuIiIiIiIiIiIiIiIiIiIjWnIiIiIiIiIiIiIiIiIiIiOgfT9VLkbfUNOwAAAAASUVORK5CYII="
)

CONTENT_ID = re.compile(r"^[0-9a-fA-F]{64}$")

ImageId = Annotated[
    str,
    Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="an id from an earlier response (or one you chose in /v1/embed)",
        examples=["3f7c...e1"],
    ),
]
Base64Image = Annotated[
    str, Field(min_length=1, description="the image file (PNG, JPEG, WebP, BMP, GIF or TIFF), base64; "
                                         "a data: URL prefix is allowed")
]
MaskFormatField = Annotated[
    Literal["rle", "polygon", "png"],
    Field(description="rle: COCO compressed RLE (default); polygon: outer contours; png: base64 PNG"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RLE(_Strict):
    """COCO run-length encoding (SA-1B's format): column-major runs, starting with background."""

    size: Annotated[list[Annotated[int, Field(ge=1, le=1 << 16)]], Field(min_length=2, max_length=2)] = Field(
        description="[height, width]"
    )
    counts: Union[Annotated[str, Field(max_length=1 << 22)], Annotated[list[Annotated[int, Field(ge=0, le=1 << 32)]],
                                                                      Field(max_length=1 << 22)]] = Field(
        description="compressed counts string (pycocotools), or the uncompressed list of run lengths"
    )


# The JSON schemas state the shapes; the validators below check them with messages that say what was wrong.
Points = Annotated[list[list[float]], WithJsonSchema(
    {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "number"}, "minItems": 2,
                                               "maxItems": 2}})]
Labels = Annotated[list[int], WithJsonSchema({"type": "array", "items": {"enum": [0, 1]}})]
Box = Annotated[list[float], WithJsonSchema({"type": "array", "items": {"type": "number"}, "minItems": 4,
                                             "maxItems": 4})]


class ObjectPrompt(_Strict):
    """Prompts for one object: points with labels, a box, a mask, or a combination."""

    model_config = ConfigDict(json_schema_extra={
        "anyOf": [{"required": ["points"]}, {"required": ["box"]}, {"required": ["mask_input"]}]})

    points: Points | None = Field(
        None, description="clicks as [[x, y], ...] in image pixels", examples=[[[14, 11]]]
    )
    labels: Labels | None = Field(
        None, description="one per point: 1 foreground, 0 background; default all 1", examples=[[1]]
    )
    box: Box | None = Field(None, description="[x0, y0, x1, y1] in image pixels", examples=[[6, 4, 22, 18]])
    mask_input: RLE | None = Field(
        None, description="a previous mask of this object (image size), as COCO RLE, to refine"
    )

    @field_validator("points")
    @classmethod
    def _points_are_pairs(cls, value):
        if value is not None:
            for i, p in enumerate(value):
                if len(p) != 2:
                    raise ValueError(f"point {i} must be [x, y], got {len(p)} numbers")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_binary(cls, value):
        if value is not None and any(v not in (0, 1) for v in value):
            raise ValueError("labels must be 1 (foreground) or 0 (background)")
        return value

    @field_validator("box")
    @classmethod
    def _box_shape(cls, value):
        if value is not None:
            if len(value) != 4:
                raise ValueError(f"box must be 4 numbers [x0, y0, x1, y1], got {len(value)}")
            if value[0] > value[2] or value[1] > value[3]:
                raise ValueError("box must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.labels is not None:
            if self.points is None:
                raise ValueError("labels given without points")
            if len(self.labels) != len(self.points):
                raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels: give one label per point")
        if not self.points and self.box is None and self.mask_input is None:
            raise ValueError("an object needs points, a box or a mask_input")
        return self


class _ImageSource(_Strict):
    image: Base64Image | None = None
    image_id: ImageId | None = None


class SegmentRequest(_ImageSource):
    """An image (base64, or the image_id of an earlier call) and prompts for one or more objects."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"image": EXAMPLE_PNG, "objects": [{"points": [[14, 11]], "labels": [1]}, {"box": [6, 4, 22, 18]}]}]})

    objects: list[ObjectPrompt] = Field(min_length=1, description="one prompt set per object")
    multimask_output: bool = Field(
        True, description="three candidate masks per object (best for a single ambiguous click), else one"
    )
    mask_format: MaskFormatField = "rle"


class EmbedRequest(_ImageSource):
    """An image to encode and cache; `image_id` names it (default: the sha256 of the bytes)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"image": EXAMPLE_PNG}]})

    @field_validator("image_id")
    @classmethod
    def _not_a_content_hash(cls, value):
        """64 hex digits are content ids, only ever computed by the server: a caller may not plant one."""
        if value is not None and CONTENT_ID.match(value):
            raise ValueError("64 hex digits are reserved for content hashes the server computes: choose another name")
        return value


class EverythingRequest(_ImageSource):
    """Segment everything: the AutomaticMaskGenerator's parameters (Meta's names and defaults)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"image": EXAMPLE_PNG, "points_per_side": 8}]})

    points_per_side: int = Field(32, ge=1, description="grid of points_per_side^2 prompts")
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = Field(0.8, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    stability_score_offset: float = Field(1.0, ge=0, le=100)
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_n_layers: int = Field(0, ge=0)
    crop_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1)
    crop_n_points_downscale_factor: int = Field(1, ge=1, le=16)
    min_mask_region_area: int = Field(0, ge=0, le=1 << 32)
    use_m2m: bool = False
    multimask_output: bool = True
    mask_format: MaskFormatField = "rle"

    def amg_params(self) -> dict:
        return self.model_dump(exclude={"image", "image_id", "mask_format"})


# ---- /v1/track messages (docs/protocol.md): the same prompt checks as REST, strict types -------------------


ObjId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1, description="the client's id for an object")]


class TrackStart(BaseModel):
    """{"type": "start", ...}: a new tracking session."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["start"] = "start"
    model: StrictStr | None = None
    image_size: StrictInt | None = None
    mode: Literal["video", "images"] = "video"
    width: Annotated[StrictInt, Field(ge=1)] | None = None
    height: Annotated[StrictInt, Field(ge=1)] | None = None


class TrackResume(BaseModel):
    """{"type": "resume", "session_id", "resume_token"}."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["resume"] = "resume"
    session_id: Annotated[StrictStr, Field(max_length=128)]
    resume_token: Annotated[StrictStr, Field(max_length=128)]


class TrackRemove(BaseModel):
    """{"type": "remove_object", "obj_id"}."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["remove_object"] = "remove_object"
    obj_id: ObjId


class TrackPrompt(ObjectPrompt):
    """{"type": "prompt", ...}: one object's prompts with REST's checks (`mask` is REST's `mask_input`)."""

    type: Literal["prompt"] = "prompt"
    obj_id: ObjId
    frame: Literal["next", "current"] = "next"
    update_memory: StrictBool = True
    mask_input: RLE | None = Field(None, validation_alias="mask")


# ---- responses --------------------------------------------------------------------------------------------


class RLEMask(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE counts (decode with pycocotools.mask.decode)")


class PolygonMask(BaseModel):
    size: list[int] = Field(description="[height, width]")
    polygons: list[list[float]] = Field(description="outer contours, each [x0, y0, x1, y1, ...] (holes not kept)")


class PNGMask(BaseModel):
    size: list[int] = Field(description="[height, width]")
    png: str = Field(description="base64 single-channel PNG, 255 inside the mask")


Mask = Union[RLEMask, PolygonMask, PNGMask]


class SegmentedObject(BaseModel):
    masks: list[Mask] = Field(description="candidate masks, best score first")
    scores: list[float] = Field(description="predicted IoU of each mask")
    boxes: list[list[float]] = Field(description="tight [x0, y0, x1, y1] of each mask (inclusive; zeros if empty)")


class ImageInfo(BaseModel):
    image_id: str = Field(description="reuse it in later calls: the embedding is cached under it")
    width: int
    height: int
    model: str


class SegmentResponse(ImageInfo):
    objects: list[SegmentedObject] = Field(description="one entry per requested object, in order")


class EmbedResponse(ImageInfo):
    cached: bool = Field(description="true if the embedding was already cached (no encoder run)")
    embedding_bytes: int


class Annotation(BaseModel):
    """One mask in SA-1B's annotation fields."""

    segmentation: Mask
    area: int
    bbox: list[float] = Field(description="[x, y, width, height]")
    predicted_iou: float
    point_coords: list[list[float]]
    stability_score: float
    crop_box: list[float] = Field(description="[x, y, width, height] of the crop that produced it")


class EverythingResponse(ImageInfo):
    annotations: list[Annotation]


class ModelInfo(BaseModel):
    name: str = Field(description="Meta's checkpoint name")
    version: str
    image_size: int
    parameters: int
    size_mb: float = Field(description="parameter memory in MiB")
    dtype: str
    device: str
    random_weights: bool = Field(description="true for untrained weights (tests only): masks are meaningless")


class ModelsResponse(BaseModel):
    loaded: ModelInfo
    available: list[str] = Field(description="every model name this build can serve (SAM2_MODEL)")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


# ---- multipart bodies (documentation only: the routes parse them through the JSON models) -----------------

BinaryImage = Annotated[str, Field(json_schema_extra={"format": "binary"}, description="the image file")]


class SegmentForm(SegmentRequest):
    """multipart/form-data: the image as a file part, `objects` as JSON text."""

    image: BinaryImage | None = None
    objects: str = Field(description='JSON array of object prompts, e.g. [{"points": [[330, 170]], "labels": [1]}]')


class EmbedForm(EmbedRequest):
    """multipart/form-data: the image as a file part."""

    image: BinaryImage | None = None


class EverythingForm(EverythingRequest):
    """multipart/form-data: the image as a file part, parameters as fields."""

    image: BinaryImage | None = None
