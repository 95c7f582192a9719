"""The reading page (the paper's Figure 19 UI, as a web app).

A reader opens their personal link /r/<token>: a list of their cases and their progress;
each case shows the image (zoom, pan, window/level), the indication and the blinded
reports sentence by sentence, with keyboard shortcuts. Every answer is stored at once
(readerstudy.store). A reader sees only their own rows and images; image names are checked
against the reader's rows and resolved inside images/, so no path leaves it; nothing else of
the study directory (the key, the manifest, the workbooks) has a route.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from readerstudy.items import Item, by_reader, read_items
from readerstudy.layout import StudyDir
from readerstudy.schema import CATEGORIES, IMPACTS, Answer, problems, unknown_values
from readerstudy.store import AnswerStore

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


class Reading:
    """One reader's rows, grouped by case, and their answers."""

    def __init__(self, name: str, items: list[Item], store: AnswerStore):
        self.name, self.items, self.store = name, items, store
        self.rows = {it.row: it for it in items}
        self.cases: dict[int, list[Item]] = {}
        for it in items:
            self.cases.setdefault(it.case, []).append(it)
        self.images = {it.image for it in items}

    def answers(self) -> dict[str, Answer]:
        return {row: a for (_, row), a in self.store.answers(self.name).items()}

    def progress(self, answers: dict[str, Answer]) -> dict:
        todo = [it for it in self.items if not it.empty]
        done = [it for it in todo if it.row in answers and not problems(answers[it.row])]
        cases_done = sum(all(it.row in answers and not problems(answers[it.row]) for it in rows if not it.empty)
                         for rows in self.cases.values())
        return {"done": len(done), "total": len(todo), "cases_done": cases_done, "cases": len(self.cases)}


def create_app(study: StudyDir) -> Starlette:
    study.check()
    readers = json.loads(study.readers.read_text())["readers"]
    items = by_reader(read_items(study.items))
    store = AnswerStore(study.store)
    by_token = {r["token"]: Reading(name, items.get(name, []), store) for name, r in readers.items()}
    images_root = study.images.resolve()
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    def reading(request: Request) -> Reading:
        r = by_token.get(request.path_params["token"])
        if r is None:
            raise HTTPException(404, "This reading link does not exist. Ask the study's coordinator for yours.")
        return r

    async def index(request: Request) -> Response:
        return templates.TemplateResponse(request, "index.html", {})

    async def reader_home(request: Request) -> Response:
        r = reading(request)
        answers = r.answers()
        cases = []
        for n, rows in sorted(r.cases.items()):
            todo = [it for it in rows if not it.empty]
            ok = sum(it.row in answers and not problems(answers[it.row]) for it in todo)
            cases.append({"n": n, "done": ok, "total": len(todo)})
        return templates.TemplateResponse(request, "reader.html", {
            "token": request.path_params["token"], "reader": r.name, "cases": cases,
            "progress": r.progress(answers), "finished": r.name in store.finished()})

    async def case_page(request: Request) -> Response:
        r = reading(request)
        n = request.path_params["n"]
        if n not in r.cases:
            raise HTTPException(404, f"There is no case {n} in this reading.")
        rows = r.cases[n]
        answers = r.answers()
        reports: dict[str, list[dict]] = {}
        for it in rows:
            a = answers.get(it.row, Answer())
            reports.setdefault(it.letter, []).append({
                "row": it.row, "n": it.sentence, "text": it.text, "empty": it.empty, "answer": a.to_json(),
                "problems": [m for _, m in problems(a, it.empty)] if not a.is_blank() else []})
        return templates.TemplateResponse(request, "case.html", {
            "token": request.path_params["token"], "reader": r.name, "case": n, "n_cases": len(r.cases),
            "image": rows[0].image, "indication": rows[0].indication, "reports": reports,
            "categories": CATEGORIES, "impacts": IMPACTS, "progress": r.progress(answers)})

    async def image(request: Request) -> Response:
        r = reading(request)
        name = request.path_params["name"]
        path = (images_root / name).resolve()
        # the name must be one of this reader's images, and resolve inside images/ (no ../, no links out)
        if name not in r.images or not path.is_relative_to(images_root) or not path.is_file():
            raise HTTPException(404, "No such image in this reading.")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def answer(request: Request) -> Response:
        r = reading(request)
        try:
            body = await request.json()
            row = str(body["row"])
            a = Answer.from_json(body)
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": "expected JSON {row, action, categories, impact, edit}"}, status_code=400)
        it = r.rows.get(row)
        if it is None:
            return JSONResponse({"error": f"row {row} is not in this reading"}, status_code=404)
        if it.empty:
            return JSONResponse({"error": "an empty report takes no answer"}, status_code=400)
        unknown = unknown_values(a)
        if unknown:  # never store a value outside the vocabulary
            return JSONResponse({"error": unknown[0][1]}, status_code=400)
        store.save(r.name, row, a)
        return JSONResponse({"saved": True, "problems": [m for _, m in problems(a)],
                             "progress": r.progress(r.answers())})

    async def finish(request: Request) -> Response:
        r = reading(request)
        answers = r.answers()
        open_rows = [it.row for it in r.items if not it.empty and (it.row not in answers or problems(answers[it.row]))]
        if open_rows:
            return JSONResponse({"finished": False, "open": open_rows,
                                 "error": f"{len(open_rows)} sentence(s) are not complete yet: {', '.join(open_rows[:8])}"},
                                status_code=409)
        store.finish(r.name)
        return JSONResponse({"finished": True})

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return templates.TemplateResponse(request, "message.html", {"message": exc.detail}, status_code=exc.status_code)

    routes = [
        Route("/", index),
        Route("/r/{token}", reader_home),
        Route("/r/{token}/case/{n:int}", case_page),
        Route("/r/{token}/image/{name}", image),
        Route("/r/{token}/answer", answer, methods=["POST"]),
        Route("/r/{token}/finish", finish, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})
