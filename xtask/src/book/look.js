// Run by `cargo xtask book` in each page of the built book, after the
// page's load event (see xtask/src/book/look.rs). It judges nothing: it
// reports what the browser shows, as a JSON string, and look.rs decides.
(async () => {
  await document.fonts.ready;
  const main = document.querySelector("main");
  const box = (e) => {
    const r = e.getBoundingClientRect();
    return [r.width, r.height];
  };
  // mdBook shows each picture twice, once in the text and once, hidden
  // until clicked, enlarged: both must load; the hidden one is not drawn.
  const images = Array.from(document.images);
  await Promise.all(images.map((i) => i.decode().catch(() => null)));
  const pictures = images.map((i) => ({
    kind: "img",
    src: i.getAttribute("src") || "",
    // A file that is missing or not a picture completes with no size at all.
    loaded: i.complete && (i.naturalWidth > 0 || i.naturalHeight > 0),
    natural: [i.naturalWidth, i.naturalHeight],
    visible: i.checkVisibility(),
    drawn: box(i),
  }));
  const inside = (selector) => (main ? Array.from(main.querySelectorAll(selector)) : []);
  // SVG written into the page (not inside another SVG).
  for (const svg of inside("svg").filter((s) => !s.parentElement.closest("svg"))) {
    const label = svg.querySelector("title")?.textContent || svg.getAttribute("aria-label") || "";
    // Its own size is its viewBox's, where it has one.
    const view = svg.viewBox.baseVal;
    const natural = view && view.width ? [view.width, view.height] : box(svg);
    pictures.push({
      kind: "svg", src: label.trim(), loaded: true, natural, visible: svg.checkVisibility(), drawn: box(svg),
    });
  }
  // Pictures the text links to: loaded here as the reader's click would.
  const picture = /\.(svg|png|jpe?g|gif|webp)([?#].*)?$/i;
  const linked = inside("a[href]").filter((a) => picture.test(a.getAttribute("href")));
  for (const a of linked) {
    const i = new Image();
    const loaded = await new Promise((done) => {
      i.onload = () => done(true);
      i.onerror = () => done(false);
      i.src = a.href;
    });
    pictures.push({
      kind: "link", src: a.getAttribute("href"), loaded, natural: [i.naturalWidth, i.naturalHeight],
      visible: false, drawn: [0, 0],
    });
  }
  // Code blocks with no visible text: an include that selected nothing.
  // mdBook hides its own wrapper lines (`fn main() {`) with CSS, so
  // innerText leaves them out.
  const codes = inside("pre > code");
  const heading = (e) => {
    const all = inside("h1, h2, h3, h4, h5, h6");
    const before = all.filter((h) => h.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING);
    return before.length ? before[before.length - 1].textContent.trim() : "";
  };
  const empty = codes.filter((c) => c.innerText.trim() === "").map(heading);
  // Directives mdBook left in the text because it could not expand them.
  const text = main ? main.innerText : "";
  const directives = Array.from(text.matchAll(/\{\{\s*#[^}\n]*(\}\})?/g), (m) => m[0]);
  return JSON.stringify({ url: location.href, main: !!main, pictures, code_blocks: codes.length, empty, directives });
})()
