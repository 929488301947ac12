"""Records that flow between stages: the only shared vocabulary of the pipeline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


def mmss(seconds: float) -> str:
    """Seconds as MM:SS (HH:MM:SS past an hour), the paper's timestamp format."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class VideoRecord(Record):
    """Probed metadata and M_seg output of one video (videos.jsonl)."""

    path: str
    duration: float
    fps: float
    frames: int
    width: int
    height: int
    rotation: int = 0
    has_audio: bool = False
    shots: list[tuple[float, float]] = Field(default_factory=list)
    chunks: list[tuple[float, float]] = Field(default_factory=list)


class CaptionLine(BaseModel):
    """One timestamped line of C_detail; times are seconds from the start of the video."""

    start: float
    end: float
    text: str


class CaptionRecord(Record):
    """C_detail (timestamped lines) and C_sum of one video (captions.jsonl)."""

    video_id: str
    video_path: str
    duration: float
    detail: list[CaptionLine]
    summary: str
    captioner: str  # which model wrote the lines ("tagger" lines are tags, not a VLM's prose)
    clipped_lines: int = 0  # lines whose times fell outside their chunk and were clipped

    def detail_text(self) -> str:
        """C_detail as prompt text: one `[MM:SS-MM:SS] text` line per caption line."""
        return "\n".join(f"[{mmss(c.start)}-{mmss(c.end)}] {c.text}" for c in self.detail)


class ErrorRecord(BaseModel):
    """One failed item (errors.jsonl): never silently dropped."""

    stage: str
    id: str
    error: str  # exception class
    message: str
    time: float


class QARecord(Record):
    """An accepted question (qa.jsonl) with the evidence of every filter it passed."""

    video_id: str
    question: str
    answer: str
    qtype: str
    evidence: list[str]  # the C_detail lines that support the answer, as "[MM:SS-MM:SS] text"
    filters: dict[str, object] = Field(default_factory=dict)  # F1/F2/F3 verdicts, probe answers


class MCQRecord(Record):
    """A multiple-choice reformulation of an accepted question (mcq.jsonl)."""

    qa_id: str
    video_id: str
    question: str
    options: dict[str, str]  # letter -> option text, letters A.. in order
    answer: str  # the correct letter
    qtype: str
    checks: dict[str, object] = Field(default_factory=dict)  # distractors proposed/dropped/judged


class CoTStep(BaseModel):
    """One ReAct step of the Reasoner (thought + action or final answer) and the observation."""

    thought: str
    action: str | None = None  # e.g. segment_retrieval("red ball") / segment_query("00:12")
    observation: str | None = None
    final_answer: str | None = None
    tool_error: str | None = None  # set when the action was malformed (tool-call error rate)


class CoTRecord(Record):
    """A kept re-watching chain of thought (cot.jsonl): the trajectory and the converted text."""

    mcq_id: str
    video_id: str
    question: str
    options: dict[str, str]
    answer: str
    trajectory: list[CoTStep]
    cot: str  # reasoning with <action>/<observation> spans, ending in <answer>X</answer>
    n_actions: int
    conversions: int = 1  # M_convert calls it took (more after prose_adds_facts retries)
