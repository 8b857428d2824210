# each minion's own serverfix pillar (the rollout's restart consent is merged over it)
serverfix:
  backend:
    name: app-{{ grains['id'] }}
