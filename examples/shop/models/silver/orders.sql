-- One row per order: typed, with its amount and month. Nothing is filtered here: the
-- checks in orders.yml drop the rows that break a business rule (re-sent copies included)
-- to quarantine.silver_orders, with the check and the reason, before the rest is published.
select order_id,
       customer_id,
       product_id,
       quantity,
       cast(unit_price as decimal(10, 2)) as unit_price,
       cast(quantity * cast(unit_price as decimal(10, 2)) as decimal(12, 2)) as amount,
       lower(status) as status,
       cast(ordered_at as timestamptz) as ordered_at,
       strftime(cast(ordered_at as timestamptz), '%Y-%m') as order_month,
       country,
       -- 1 for the first copy of an order; at-least-once delivery re-sends a few.
       row_number() over (
           partition by order_id
           order by _ingested_at, _origin, _origin_row
       ) as delivery,
       -- Where the row came from, so a quarantined row can be traced to its export line.
       _ingested_at,
       _origin,
       _origin_row
from bronze.orders
order by order_id, delivery
