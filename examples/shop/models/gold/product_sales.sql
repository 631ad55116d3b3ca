-- Orders, units and revenue of every product in the catalog (zero if it never sold).
select p.product_id,
       p.name,
       p.category,
       count(o.order_id) as orders,
       coalesce(sum(o.quantity) filter (where o.status not in ('cancelled', 'returned')), 0)
           as units,
       coalesce(sum(o.amount) filter (where o.status not in ('cancelled', 'returned')), 0)
           as revenue
from silver.products p
left join silver.orders o on o.product_id = p.product_id
group by all
order by p.product_id
