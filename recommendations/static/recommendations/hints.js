// The menu's "often ordered with" hints: each is rendered by the server, hidden unless its
// dish has a quantity; this shows or hides it as the customer types. Without JavaScript the
// page still orders, and a re-rendered form shows the hints of the dishes in the cart.
(() => {
  const form = document.getElementById("order-form");
  if (!form) return;
  const update = (input) => {
    const hint = form.querySelector(`[data-often-with="${input.name.slice("qty-".length)}"]`);
    if (hint) hint.hidden = !(Number.parseInt(input.value, 10) > 0);
  };
  form.addEventListener("input", (event) => {
    if (event.target.name && event.target.name.startsWith("qty-")) update(event.target);
  });
  form.querySelectorAll('input[name^="qty-"]').forEach(update);
})();
