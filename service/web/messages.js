// The one message line of the page (fixed at the bottom: showing it never moves the layout).

let timer = null;

/** level: "info" | "error"; an error stays until the next message or a click on it. */
export function showMessage(text, level = "info") {
  const box = document.getElementById("message");
  box.textContent = text;
  box.dataset.level = level;
  box.hidden = false;
  clearTimeout(timer);
  if (level !== "error") timer = setTimeout(() => { box.hidden = true; }, 4000);
}

export function clearMessage() {
  document.getElementById("message").hidden = true;
}
