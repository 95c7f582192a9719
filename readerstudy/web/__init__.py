"""The reading page: a server-rendered Starlette app (Jinja2 templates, plain JS, no build step)."""
