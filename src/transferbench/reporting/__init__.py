"""The report: pretrained against random per experiment, beside the reference studies' published figures."""
