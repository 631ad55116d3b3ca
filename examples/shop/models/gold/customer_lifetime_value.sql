-- Orders, revenue and first/last order of each customer who ordered.
select c.customer_id,
       c.name,
       c.country,
       count(o.order_id) as orders,
       coalesce(sum(o.amount) filter (where o.status not in ('cancelled', 'returned')), 0)
           as revenue,
       min(o.ordered_at) as first_order_at,
       max(o.ordered_at) as last_order_at
from silver.customers c
join silver.orders o on o.customer_id = c.customer_id
group by all
order by c.customer_id
