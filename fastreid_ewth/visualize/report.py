"""``index.html``: one page linking every picture of a run, with what each shows and how to read its numbers."""
import html

__all__ = ["Section", "index_html"]


class Section:
    """A picture (or its pages) on the index page.

    Args:
        title: heading. files: file names relative to the output folder (PNG pictures; other links when
            ``images`` is False). caption: what the picture shows. legend: how to read its numbers and colours
            (list of lines). images: show ``files`` as pictures (else as links).
    """

    def __init__(self, title, files, caption, legend=(), images=True):
        self.title, self.files, self.caption = title, list(files), caption
        self.legend, self.images = list(legend), images


def _e(text):
    return html.escape(str(text), quote=True)


def index_html(title, summary_rows, sections, notes=()):
    """The page as a string.

    Args:
        title: page title. summary_rows: [(header, [cells])] for the table of models, first row the header.
        sections: [:class:`Section`]. notes: lines shown under the table.
    """
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>{}</title>".format(_e(title)),
           "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
           "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}"
           "img{max-width:100%;border:1px solid #ddd}figure{margin:0 0 1.5em 0}"
           "figcaption{color:#333;margin:.3em 0}code{background:#f3f3f3}</style></head><body>",
           "<h1>{}</h1>".format(_e(title))]
    if summary_rows:
        header, rows = summary_rows[0], summary_rows[1:]
        out.append("<table><tr>{}</tr>".format("".join("<th>{}</th>".format(_e(h)) for h in header)))
        for row in rows:
            out.append("<tr>{}</tr>".format("".join("<td>{}</td>".format(_e(c)) for c in row)))
        out.append("</table>")
    for note in notes:
        out.append("<p>{}</p>".format(_e(note)))
    out.append("<ul>{}</ul>".format("".join(
        "<li><a href=\"#s{}\">{}</a></li>".format(i, _e(s.title)) for i, s in enumerate(sections))))
    for i, section in enumerate(sections):
        out.append("<h2 id=\"s{}\">{}</h2>".format(i, _e(section.title)))
        out.append("<figure><figcaption>{}</figcaption>".format(_e(section.caption)))
        if section.legend:
            out.append("<ul>{}</ul>".format("".join("<li>{}</li>".format(_e(line)) for line in section.legend)))
        for name in section.files:
            if section.images:
                out.append("<p><a href=\"{0}\"><img src=\"{0}\" alt=\"{0}\"></a></p>".format(_e(name)))
            else:
                out.append("<p><a href=\"{0}\">{0}</a></p>".format(_e(name)))
        out.append("</figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
