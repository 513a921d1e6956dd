// Blind evaluation: a, b, t pick an answer (or the tie) and move to the note; Enter submits;
// Esc leaves the note. Without this script the page works with the mouse alone.
(() => {
  const form = document.getElementById("judge");
  if (!form) return;
  const note = form.elements.namedItem("note");
  const picks = { a: "A", b: "B", t: "tie" };
  const typing = (el) => el instanceof HTMLTextAreaElement || (el instanceof HTMLInputElement && el.type === "text");
  const chosen = () => form.querySelector('input[name="choice"]:checked') !== null;

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return; // Enter in the note submits the form as any text field does
    }
    const value = picks[event.key.toLowerCase()];
    if (value) {
      event.preventDefault();
      form.querySelector(`input[name="choice"][value="${value}"]`).checked = true;
      note.focus();
    } else if (event.key === "Enter" && chosen() && !(event.target instanceof HTMLButtonElement)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();
