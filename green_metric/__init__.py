"""GREEN (Ostmeier et al. 2024) as a bench metric, judged through the harness's LLM layer.

The prompt is GREEN's own, loaded at run time from the user's installed `green_score`
package or from a file they point to (green_metric.prompt); the answer is read by our parser
(green_metric.answer); the metric is green_metric.metric.GreenMetric. See docs/green.md.
"""
