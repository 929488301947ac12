"""Scale-out: the synthesis stages and the eval runner on Ray Data (`backend: ray`).

The stages' per-item functions (`caption_item`, `video_questions`, `chain_item`) are the same
under both drivers; this package only knows where items run and where their records go.
"""
