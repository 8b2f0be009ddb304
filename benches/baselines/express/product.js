// Baseline product service for gateway-get: Express, products from memory,
// the same JSON as the shop's product.get reply for the same seeded ids
// (bench-0000 .. bench-0999, as `shop-bench seed-products` creates them).
'use strict';

const express = require('express');

const port = Number(process.env.PORT || 3101);
const count = Number(process.env.PRODUCTS || 1000);

const products = new Map();
for (let i = 0; i < count; i++) {
  const n = String(i).padStart(4, '0');
  const id = `bench-${n}`;
  products.set(id, {
    id,
    name: `Bench product ${i}`,
    description: `Benchmark product number ${n}; a plausible catalogue description sized like real data.`,
    price_cents: 1999,
    currency: 'USD',
    stock: 1000000,
    revision: i + 1,
  });
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');

app.get('/api/products/:id', (req, res) => {
  const product = products.get(req.params.id);
  if (!product) {
    res.status(404).json({ error: { code: 404, message: `product ${req.params.id} not found` } });
    return;
  }
  res.json(product);
});

app.listen(port, '127.0.0.1', () => {
  console.log(`express product service listening on 127.0.0.1:${port} (${count} products)`);
});
